"""MonitoringService (cadpipe.v1), served by the watcher because it holds S3, MongoDB and NATS.

ports.py      what the use cases need from outside (S3, the jobs collection, JetStream)
reports.py    what they answer: the report types and the pure rules that build them
use_cases.py  Monitoring: every check run for the request, each bounded by a timeout
adapters.py   the ports over the watcher's own clients
servicer.py   the gRPC entrypoint: request -> use case -> response message
"""
