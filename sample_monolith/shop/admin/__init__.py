"""Back-office routes and the old reporting jobs. Reachable from the office network only."""
