"""Runtime: the Grounder API, backends, streams and the command line."""
