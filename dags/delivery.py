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

Wiring only: every task is one function of `healthpredict.delivery`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, TriggerRule, dag, task

from healthpredict.delivery import promotion, rollout, smoke
from healthpredict.orchestration import policy, wiring

PARAMS = {
    "image_tag": Param("", type="string", description="Immutable image tag to ship."),
    "model_version": Param("", type="string", description="Model version to promote."),
}


@dag(
    **wiring.dag_arguments(
        wiring.DELIVERY_DAG_ID,
        __doc__,
        "delivery",
        default_args=policy.default_args(execution_timeout=timedelta(minutes=15)),
        params=PARAMS,
    )
)
def healthpredict_delivery() -> None:
    """Plan -> build -> push -> record -> roll out -> wait -> smoke test -> promote -> record."""
    # No retries: a refused release is refused again.
    plan = task(retries=0, execution_timeout=timedelta(minutes=2))(rollout.plan)
    build_image = task(retries=1, execution_timeout=timedelta(minutes=45))(rollout.build_image)
    push_image = task(execution_timeout=timedelta(minutes=20))(rollout.push_image)
    record_revision = task(execution_timeout=timedelta(minutes=5))(rollout.record_revision)
    roll_out = task(retries=1, execution_timeout=timedelta(minutes=5))(rollout.roll_out)
    # No retries: the rollout timeout is the deadline, and waiting again would keep a broken
    # rollout live longer; the rollback starts at once.
    wait_for_rollout = task(retries=0, execution_timeout=timedelta(minutes=20))(
        rollout.wait_for_rollout
    )
    # No retries: it polls /ready for its own timeout, and a wrong answer stays wrong.
    smoke_test = task(retries=0, execution_timeout=timedelta(minutes=10))(smoke.smoke_test)
    promote_champion = task(retries=3, execution_timeout=timedelta(minutes=5))(
        promotion.promote_champion
    )
    # The last task on the way that worked, so a failed delivery is a failed run (the
    # rollback below is a leaf that succeeds when it has undone a failure).
    record_delivery = task(execution_timeout=timedelta(minutes=2))(rollout.record_delivery)
    roll_back = task(
        trigger_rule=TriggerRule.ONE_FAILED, retries=3, execution_timeout=timedelta(minutes=25)
    )(rollout.roll_back)

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
