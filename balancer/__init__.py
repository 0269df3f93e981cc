"""distlb-balancer: a stateless distcc proxy; each job goes to the least-loaded healthy server."""
