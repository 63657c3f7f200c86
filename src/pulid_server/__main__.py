from pulid_server.cli import app

app(prog_name="pulid")
