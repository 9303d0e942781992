"""The end-to-end check table of ``podnet lab check``: one row per behaviour, observed from real pods.

Data flow::

    lab_check (verb) --> checks.run_checks (S): creates the labelled Services and pods it needs,
        runs each check, deletes them again (also on failure)
      --> checkkit: Row / render_table (P), exec_in, probe, getent (S: ``ip netns exec`` into a pod
          or the outside host), bounded waits
      --> probe (S; runs inside the pod netns, ``python -P -m podnet.netlab.check.probe``): one JSON
          line per attempt, naming the pod that answered and the source IP it saw

    lab_check --suite netpol --> netpol_suite.run_suite (S): the upstream NetworkPolicy e2e model
        (namespaces x, y, z; pods a, b, c; a Service per pod) driven by netpol_cases (P: the cases
        as data, shared with tests/policy) --> netpol_probe (S; inside each pod: one truth-table row,
        every target probed in parallel); render_case (P) prints expected against observed

Public surface: ``checks.run_checks``, ``checkkit.Row``/``render_table``/``pod_netns_map``,
``lab_check.check``/``check_netpol``, ``probe.main``, ``netpol_suite.run_suite``/``render_case``,
``netpol_cases.CASES``. Fakes: none.

Import rule: podnet.kube, host, lab and check itself (the plan, the state file and the manifests
come from lab).
"""
