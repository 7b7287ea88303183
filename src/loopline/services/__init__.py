"""The local platform (embedded default): start, stop and check the services on 127.0.0.1."""
