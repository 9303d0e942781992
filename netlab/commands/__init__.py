"""The ``podnet`` command and the verbs that use several layers at once.

Data flow::

    podnet lab <verb> | podnet watch  --> cli.main: verb -> module (``add_arguments``/``run``)
        lab apiserver -> apiserver.server; lab up/down -> lab.lab_up / lab.lab_down;
        lab check -> check.lab_check; lab demo -> lab_demo (up + sample app + check + picture + down);
        lab draw -> lab_draw (the picture of any running lab);
        lab rbac-report -> lab_rbac_report (granted-but-never-used RBAC permissions of a running lab)

Public surface: ``cli.main`` (the ``podnet`` console script), ``lab_demo.run``. Fakes: none.

Import rule: any netlab layer and podnet.kube; nothing imports commands.
"""
