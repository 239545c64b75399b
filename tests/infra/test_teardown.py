"""Teardown edge cases against moto: an interrupted destroy, and nothing to do."""

from __future__ import annotations

import pytest
from healthpredict_infra.teardown import Clients, main, teardown
from infra_support import Synthesized, deploy_stack, fresh_moto

pytestmark = [
    pytest.mark.infra,
    pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto"),
]


def test_retained_storage_found_by_tag_after_plain_stack_delete(
    default: Synthesized, moto_endpoint: str
) -> None:
    """`cdk destroy` alone leaves the retained bucket and repository; teardown finds them by tag."""
    session, cfn = deploy_stack(default, moto_endpoint)
    name = default.config.stack_name
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]
    }
    s3 = session.client("s3", endpoint_url=moto_endpoint)
    s3.put_object(Bucket=outputs["BucketName"], Key="data/raw.csv", Body=b"a,b\n")
    cfn.delete_stack(StackName=name)

    # Retained on purpose: deleting the stack must not lose data.
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [outputs["BucketName"]]
    clients = Clients.create(session, moto_endpoint)
    log: list[str] = []
    assert teardown(clients, name, log=log.append) == []
    assert any("already gone" in line for line in log)
    assert s3.list_buckets()["Buckets"] == []
    ecr = session.client("ecr", endpoint_url=moto_endpoint)
    assert ecr.describe_repositories()["repositories"] == []


def test_nothing_deployed_is_a_clean_no_op(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh_moto(moto_endpoint)
    # Dummy credentials for the CLI path, which builds its own session.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.delenv("AWS_PROFILE", raising=False)
        code = main(
            [
                "--stack-name",
                "NeverDeployed",
                "--region",
                "us-east-1",
                "--endpoint-url",
                moto_endpoint,
                "--yes",
            ]
        )
    assert code == 0
    assert "nothing left behind" in capsys.readouterr().out


def test_stop_only_stops_and_keeps_everything(
    default: Synthesized, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make infra-stop`: the instance stops, the stack and its storage stay."""
    session, cfn = deploy_stack(default, moto_endpoint)
    name = default.config.stack_name
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    args = ["--stack-name", name, "--region", "us-east-1", "--endpoint-url", moto_endpoint]
    assert main([*args, "--stop-only"]) == 0

    ec2 = session.client("ec2", endpoint_url=moto_endpoint)
    reservations = ec2.describe_instances()["Reservations"]
    assert [i["State"]["Name"] for r in reservations for i in r["Instances"]] == ["stopped"]
    assert cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert main([*args, "--yes"]) == 0  # and clean up


def test_refuses_without_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("builtins.input", lambda _prompt: "no")
    assert main(["--stack-name", "HealthPredict", "--region", "us-east-1"]) == 1
