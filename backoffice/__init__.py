"""The back office: operator screens that read every app (the dashboard on the admin
home, the customer overview, configuration as code) and the one admin site they are
served from. It sits above the domain apps (customers ← metering ← billing ← rails) and
may import any of them; none of them imports it (only ``config`` names it)."""
