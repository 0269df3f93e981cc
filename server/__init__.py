"""distlb-server: a distccd-compatible compile server with slots, kills, policy and status."""
