"""AWS CDK app for the Health Predict single-instance environment."""
