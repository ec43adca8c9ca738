"""Performance tools: load generation (and, later, sweeps, scraping, reports, planning)."""
