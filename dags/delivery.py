"""
### Health Predict: delivery

The continuous delivery of the prediction service:

1. **plan** the release: the image tag must be immutable (a commit id or a version; empty,
   `latest` and anything else are refused before anything is built or pushed);
2. **build** the image and **push** it to the registry (skipped when the registry already has
   the tag: tags are immutable there);
3. **record** the Deployment's revision, then **roll out** the new image and model version in
   one patch, and **wait** until every pod is ready (`kubectl rollout status --timeout`);
4. **smoke-test** the live endpoint: `/ready`, then one `/predict` that must be served by the
   delivered model version;
5. only then **promote** the version to `champion` in the registry, and **record** the
   delivery.

Any failure after the revision was recorded triggers **roll_back** (`kubectl rollout undo` to
that revision) and leaves the champion alias where it was.

The push is checked: the digest the engine pushed must be the one the registry then holds
under the tag; a mismatch fails the task, and its retries too (they find the tag, and compare
it with the digest the journal says was pushed).

Params: `image_tag` (empty: `HEALTHPREDICT_DELIVERY_IMAGE_TAG`) and `model_version` (the
challenger the gate passed; empty for an image-only release). With
`HEALTHPREDICT_DELIVERY_DRY_RUN=true` the docker/kubectl/aws commands are recorded in the
delivery journal instead of run; with `HEALTHPREDICT_DELIVERY_CLUSTER_DRY_RUN=true` only the
kubectl ones are, and the image is built, pushed and checked for real. One delivery at a time:
two rollouts would fight over the Deployment.

Wiring only: every task calls one function of `healthpredict.delivery`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TriggerRule, dag, task

from healthpredict.delivery import promotion, rollout, smoke
from healthpredict.orchestration import policy


@dag(
    dag_id="healthpredict_delivery",
    schedule=None,
    start_date=policy.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=policy.default_args(execution_timeout=timedelta(minutes=15)),
    tags=[*policy.TAGS, "delivery"],
    doc_md=__doc__,
    params={
        "image_tag": Param("", type="string", description="Immutable image tag to ship."),
        "model_version": Param("", type="string", description="Model version to promote."),
    },
)
def healthpredict_delivery() -> None:
    """Plan -> build -> push -> record -> roll out -> wait -> smoke test -> promote -> record."""

    # No retries: a refused release is refused again.
    @task(retries=0, execution_timeout=timedelta(minutes=2))
    def plan(image_tag: str, model_version: str) -> dict[str, Any]:
        return rollout.plan(image_tag, model_version)

    @task(retries=1, execution_timeout=timedelta(minutes=45))
    def build_image(release: dict[str, Any]) -> dict[str, Any]:
        return rollout.build_image(release)

    @task(execution_timeout=timedelta(minutes=20))
    def push_image(release: dict[str, Any]) -> dict[str, Any]:
        return rollout.push_image(release)

    @task(execution_timeout=timedelta(minutes=5))
    def record_revision(release: dict[str, Any]) -> dict[str, Any]:
        return rollout.record_revision(release)

    @task(retries=1, execution_timeout=timedelta(minutes=5))
    def roll_out(release: dict[str, Any]) -> dict[str, Any]:
        return rollout.roll_out(release)

    # No retries: the rollout timeout is the deadline, and waiting again would keep a broken
    # rollout live longer; the rollback starts at once.
    @task(retries=0, execution_timeout=timedelta(minutes=20))
    def wait_for_rollout(release: dict[str, Any]) -> dict[str, Any]:
        return rollout.wait_for_rollout(release)

    # No retries: it polls /ready for its own timeout, and a wrong answer stays wrong.
    @task(retries=0, execution_timeout=timedelta(minutes=10))
    def smoke_test(release: dict[str, Any]) -> dict[str, Any]:
        return smoke.smoke_test(release)

    @task(retries=3, execution_timeout=timedelta(minutes=5))
    def promote_champion(release: dict[str, Any]) -> dict[str, Any]:
        return promotion.promote_champion(release)

    # The last task on the way that worked, so a failed delivery is a failed run (the
    # rollback below is a leaf that succeeds when it has undone a failure).
    @task(execution_timeout=timedelta(minutes=2))
    def record_delivery(release: dict[str, Any], promoted: dict[str, Any]) -> dict[str, Any]:
        return rollout.record_delivery(release, promoted)

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=3, execution_timeout=timedelta(minutes=25))
    def roll_back(snapshot: dict[str, Any] | None) -> dict[str, Any]:
        return rollout.roll_back(snapshot)

    release = plan("{{ params.image_tag }}", "{{ params.model_version }}")
    built = build_image(release)
    pushed = push_image(release)
    snapshot = record_revision(release)
    rolled = roll_out(release)
    ready = wait_for_rollout(release)
    verified = smoke_test(release)
    promoted = promote_champion(release)
    built >> pushed >> snapshot >> rolled >> ready >> verified >> promoted
    record_delivery(release, promoted)
    # Without a snapshot (a failure before it) the rollback undoes nothing.
    [rolled, ready, verified, promoted] >> roll_back(snapshot)


healthpredict_delivery()
