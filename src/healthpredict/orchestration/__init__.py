"""Task functions for the Airflow DAGs in ``dags/``: one function per task.

Each takes and returns small JSON-serialisable values (a data hash, a run id, a version
number), so XCom never carries a frame or a model; the heavy imports happen inside the
functions, so parsing a DAG file stays cheap. ``training`` serves the training DAG; the
delivery DAG calls :mod:`healthpredict.delivery`; a monitoring DAG gets its own module here and
shares :mod:`.gate`, :mod:`.tracking` and :mod:`.policy`.
"""
