"""Live session state in Redis: Lua scripts (atomic steps) and their Python face."""
