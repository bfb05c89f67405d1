"""Device profiles as data and the cost model: issue 9. Imports no torch."""
