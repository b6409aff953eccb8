"""The REST gateway: REST and Server-Sent Events in front of the gRPC services, with the routes,
the request translation and the OpenAPI document all derived from the protos' google.api.http
annotations."""
