"""What the gateway survives: fuzzing every door, faults against real processes, and a soak.

`python -m hardening [--short]` runs it all and writes hardening/HARDENING.md and
hardening/results.json. The parts: an oracle (oracle.py) built on the example policy and its
decision table; attacks with hypothesis (fuzz.py, tokens.py, h2raw.py) against an in-process
gateway and its REST door (world.py); faults against `python -m gateway` processes (faults.py);
issue 15's eight defect classes (issue15.py: policy files in policy_attacks.py, conditions in
condition_attacks.py, calls through a gateway process in
call_attacks.py, regex_stall.py and process_world.py); a soak (soak.py); known-bug probes
(bugs.py); coverage-guided fuzzing with atheris when installed (atheris_target.py); counting
(ledger.py); the report (report.py); the order of it all (suite.py). Ports, the loop thread,
the JWKS server, upstreams and processes come from gateway.testing, as for tests and benchmarks.
"""
