"""Cost guard: stop the instance when idle, and alert before the bill grows.

Two independent safety nets, because the cheapest instance-hour is the one
not running:

* a CloudWatch alarm on the instance's CPU that uses the native EC2 stop
  action (``arn:aws:automate:<region>:ec2:stop``) - no Lambda, no asset;
* an AWS Budgets monthly cost budget that notifies an SNS topic at 80 % of
  actual spend and 100 % of forecast spend.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from healthpredict_infra.checkov_skip import skip_check
from healthpredict_infra.config import InfraConfig

# Basic (free) EC2 monitoring publishes CPUUtilization every 5 minutes.
IDLE_PERIOD = cdk.Duration.minutes(5)
PERIODS_PER_HOUR = 12


class CostGuard(Construct):
    """Idle-stop alarm, monthly budget and the alert topic they both use.

    Args:
        scope: Parent stack.
        construct_id: Construct id.
        config: Validated settings (idle hours and CPU threshold, budget, e-mail).
        instance: The instance to watch and stop.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        instance: ec2.Instance,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.topic = self._topic()
        self.alarm = self._idle_alarm(instance)
        self.budget = self._budget()

    def _topic(self) -> sns.Topic:
        """Alert topic; Budgets may publish to it only for this account."""
        stack = cdk.Stack.of(self)
        topic = sns.Topic(self, "AlertTopic", display_name="Health Predict cost alerts")
        skip_check(
            topic,
            "CKV_AWS_26",
            "Carries cost alerts only, no application data. SNS's AWS-managed key "
            "(alias/aws/sns) would break them: its fixed key policy lets neither CloudWatch "
            "alarms nor AWS Budgets publish to a topic it encrypts. A customer-managed key "
            "would cost $1/month.",
        )
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowBudgetsToPublish",
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
                resources=[topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            )
        )
        if self.config.alert_email:
            # AWS e-mails a confirmation link; alerts flow once it is clicked.
            topic.add_subscription(subscriptions.EmailSubscription(self.config.alert_email))
        return topic

    def _idle_alarm(self, instance: ec2.Instance) -> cloudwatch.Alarm:
        """Stops the instance after ``idle_hours`` of average CPU below the threshold."""
        cfg = self.config
        periods = cfg.idle_hours * PERIODS_PER_HOUR
        metric = cloudwatch.Metric(
            namespace="AWS/EC2",
            metric_name="CPUUtilization",
            dimensions_map={"InstanceId": instance.instance_id},
            statistic="Average",
            period=IDLE_PERIOD,
        )
        alarm = cloudwatch.Alarm(
            self,
            "IdleStopAlarm",
            metric=metric,
            alarm_description=(
                f"Stops the Health Predict host after {cfg.idle_hours} h with average CPU "
                f"below {cfg.idle_cpu_percent:g} %"
            ),
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            threshold=cfg.idle_cpu_percent,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            # A stopped instance sends no data; that must not count as busy or idle.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.Ec2Action(cw_actions.Ec2InstanceAction.STOP))
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        return alarm

    def _budget(self) -> budgets.CfnBudget:
        """Monthly cost budget for the account, alerting through the topic.

        It covers the whole account, not only this stack: filtering by tag
        needs cost-allocation tags activated by hand, and a forgotten resource
        elsewhere costs just as much.
        """
        cfg = self.config
        budget = budgets.CfnBudget(
            self,
            "MonthlyBudget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{cdk.Stack.of(self).stack_name}-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=cfg.budget_amount, unit="USD"),
            ),
            notifications_with_subscribers=self._budget_notifications(),
        )
        # Budgets checks it may publish when the budget is created.
        policy = self.topic.node.try_find_child("Policy")
        if policy is not None:
            budget.node.add_dependency(policy)
        return budget

    def _budget_notifications(
        self,
    ) -> list[budgets.CfnBudget.NotificationWithSubscribersProperty]:
        """80 % of actual spend (act now) and 100 % of forecast (act soon)."""
        subscriber = budgets.CfnBudget.SubscriberProperty(
            subscription_type="SNS", address=self.topic.topic_arn
        )
        return [
            budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=threshold,
                    threshold_type="PERCENTAGE",
                ),
                subscribers=[subscriber],
            )
            for kind, threshold in (("ACTUAL", 80), ("FORECASTED", 100))
        ]
