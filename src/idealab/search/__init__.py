"""The execution-guided search: epochs of ideas, exploit and explore, event-driven execution."""
