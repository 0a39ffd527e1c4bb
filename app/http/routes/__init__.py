"""One router per resource of the API; each imports the deps, schemas and the services it calls."""
