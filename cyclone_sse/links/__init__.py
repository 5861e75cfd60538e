"""Links: connections to Redis and AMQP kept open with one reconnect policy, as Twisted
services, and ZeroMQ sockets watched by the reactor.  The only modules that import
txredisapi, txamqp and pyzmq."""
