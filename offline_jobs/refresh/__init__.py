"""The daily refresh: live data from the event logs, new profiles for what changed, online writes."""
