"""HTTP only: parse, call the core, shape the answer. One blueprint per resource."""
