"""The worker's rules, as plain functions, with no I/O:

job.py      what an uploaded event asks for; limits and isolation
verdict.py  how a finished sandbox run is judged
outputs.py  which produced files become outputs, under which names
report.py   the geometry report
joblog.py   what the log says
"""
