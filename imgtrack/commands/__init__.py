"""One module per verb: a plain function that takes parsed options and returns a result."""
