"""Deletion handlers that moto's CloudFormation lacks for some EC2 resource types.

moto (5.2.x) can *create* AWS::EC2::RouteTable, Route,
SubnetRouteTableAssociation, InternetGateway, VPCGatewayAttachment and
FlowLog from a template but has no handler to *delete* them: on stack
deletion it silently skips them, and then refuses to delete the VPC because
a route table is still there. Real CloudFormation deletes them, so without
help no CDK VPC stack can ever be deleted in moto.

Each handler below does what CloudFormation does, through moto's own EC2
backend calls (``delete_route_table``, ``detach_internet_gateway``...), which
keep their dependency checks. A handler is installed only for a type that
still lacks one, so a moto release that adds real support replaces these
automatically. Nothing here touches creation or any other service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from moto.cloudformation.parsing import get_model_map
from moto.ec2.models import ec2_backends


def _backend(account_id: str, region_name: str) -> Any:
    return ec2_backends[account_id][region_name]


def _delete_route(self: Any, account_id: str, region_name: str) -> None:
    backend = _backend(account_id, region_name)
    # moto deletes in arbitrary order, not CloudFormation's dependency order: the
    # table may already be gone, and with it the route.
    if self.route_table.id in backend.route_tables:
        backend.delete_route(
            self.route_table.id,
            self.destination_cidr_block,
            self.destination_ipv6_cidr_block,
        )


def _delete_route_table(self: Any, account_id: str, region_name: str) -> None:
    _backend(account_id, region_name).delete_route_table(self.id)


def _delete_association(self: Any, account_id: str, region_name: str) -> None:
    associations = _backend(account_id, region_name).subnet_associations
    associations.pop(f"{self.route_table_id}:{self.subnet_id}", None)


def _delete_gateway_attachment(self: Any, account_id: str, region_name: str) -> None:
    if str(self.gateway_id).startswith("igw-"):
        _backend(account_id, region_name).detach_internet_gateway(self.gateway_id, self.vpc_id)


def _delete_internet_gateway(self: Any, account_id: str, region_name: str) -> None:
    _backend(account_id, region_name).delete_internet_gateway(self.id)


def _delete_flow_log(self: Any, account_id: str, region_name: str) -> None:
    _backend(account_id, region_name).delete_flow_logs([self.id])


HANDLERS: dict[str, Callable[[Any, str, str], None]] = {
    "AWS::EC2::Route": _delete_route,
    "AWS::EC2::RouteTable": _delete_route_table,
    "AWS::EC2::SubnetRouteTableAssociation": _delete_association,
    "AWS::EC2::VPCGatewayAttachment": _delete_gateway_attachment,
    "AWS::EC2::InternetGateway": _delete_internet_gateway,
    "AWS::EC2::FlowLog": _delete_flow_log,
}


def lacks_delete(model: type) -> bool:
    """True if moto cannot delete this CloudFormation model on stack deletion."""
    return not hasattr(model, "delete") and hasattr(
        model.delete_from_cloudformation_json, "__isabstractmethod__"
    )


@contextmanager
def cloudformation_delete_handlers() -> Iterator[list[str]]:
    """Installs the missing handlers for the duration of the block.

    Yields:
        The resource types that needed a handler (for the test report).
    """
    models = get_model_map()
    patched: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for resource_type, handler in HANDLERS.items():
            model = models[resource_type]
            if lacks_delete(model):
                # moto's stack deletion calls resource.delete(account_id, region) first.
                patch.setattr(model, "delete", handler, raising=False)
                patched.append(resource_type)
        yield patched
