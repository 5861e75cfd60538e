"""Who may subscribe and who may publish: channel policies, signed tokens, the auth
callback, combined per connection into an ``Access``.  Handlers only call the gate."""
