"""`tdc … | head` ends quietly, while a broken socket inside a command is still an error (SIGPIPE
is not allowed to kill long-running commands such as the tail, a consumer, the relay)."""

import subprocess
import sys

PROGRAM = """
import argparse, sys
from cli import main as cli_main

def lots(args):
    for n in range(200_000):
        print(f"line {n}")
    return 0

def broken_socket(args):
    import socket
    ours, theirs = socket.socketpair()
    theirs.close()  # the database or broker closed its end
    ours.sendall(b"a query")  # a process SIGPIPE may kill dies here, without a word
    return 0

def parser():
    p = argparse.ArgumentParser(prog="tdc")
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("lots").set_defaults(run=lots)
    commands.add_parser("broken").set_defaults(run=broken_socket)
    return p

cli_main.build_parser = parser
sys.exit(cli_main.main(sys.argv[1:]))
"""


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    process = subprocess.Popen([sys.executable, "-c", PROGRAM, "lots"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"line 0\n"
    process.stdout.close()  # what `head -1` does after its line
    error = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in error and "BrokenPipe" not in error, error


def test_a_broken_socket_inside_a_command_is_still_an_error() -> None:
    result = subprocess.run([sys.executable, "-c", PROGRAM, "broken"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.returncode  # not -13: SIGPIPE did not kill it
    assert "BrokenPipeError" in result.stderr
