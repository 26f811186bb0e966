"""Pure decisions over values: settings, the stored representation and its freshness, slice planning."""
