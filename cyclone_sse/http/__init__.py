"""The HTTP/1.1 layer: ``parse`` reads request heads and bodies into values (pure: bytes
in, values or a refusal out), ``server`` is the Twisted side (one connection: requests
read, limited, timed and handed to the application's routes), ``response`` writes the
answers every route shares."""
