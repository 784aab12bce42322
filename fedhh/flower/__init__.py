"""The Flower transport's shared parts: the record layout of the messages, ``flwr run`` with the
run's status, and the Flower simulation of a run. The apps themselves are
``fedhh.server.flower_app`` (ServerApp) and ``fedhh.clients.flower_app`` (ClientApp)."""
