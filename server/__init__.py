"""Coordinator side of fedhh: gRPC coordinator service, analyst API, storage, Flower ServerApp."""
