"""Links: connections to Redis and AMQP kept open with one reconnect policy, as Twisted
services.  The only modules that import txredisapi and txamqp."""
