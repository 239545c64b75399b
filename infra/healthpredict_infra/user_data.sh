#!/bin/bash
# Health Predict instance bootstrap (cloud-init user data, runs once at first boot).
# Rendered by healthpredict_infra/user_data.py: every placeholder in double @ signs is
# replaced at synth time, some by CloudFormation references (bucket, repository).
set -euo pipefail
exec > >(tee -a /var/log/healthpredict-bootstrap.log) 2>&1
echo "healthpredict bootstrap start: $(date -Is)"

# Pinned so a rebuild gives the same tools; bump deliberately.
KIND_VERSION="v0.24.0"
KUBECTL_VERSION="v1.31.1"
COMPOSE_VERSION="v2.29.7"
PROJECT_DIR="/home/ec2-user/health-predict"
GIT_REPO_URL='@@GIT_REPO_URL@@'
GIT_REF='@@GIT_REF@@'

case "$(uname -m)" in
  x86_64) GOARCH=amd64 ;;
  aarch64) GOARCH=arm64 ;;
  *) echo "unsupported architecture $(uname -m)"; exit 1 ;;
esac

# Settings the project reads; no credentials here, the instance role provides them.
cat > /etc/healthpredict.env <<'EOF'
HEALTHPREDICT_STACK=@@STACK_NAME@@
AWS_REGION=@@REGION@@
AWS_DEFAULT_REGION=@@REGION@@
HEALTHPREDICT_S3_BUCKET=@@BUCKET_NAME@@
MLFLOW_ARTIFACT_ROOT=s3://@@BUCKET_NAME@@/mlflow
HEALTHPREDICT_ECR_REPOSITORY=@@REPOSITORY_URI@@
EOF
chmod 0644 /etc/healthpredict.env

dnf install -y docker git make jq
systemctl enable --now docker
usermod -aG docker ec2-user

# Kind runs every Kubernetes node as a container; the defaults are too low for it.
cat > /etc/sysctl.d/99-kind.conf <<'EOF'
fs.inotify.max_user_watches = 524288
fs.inotify.max_user_instances = 512
EOF
sysctl --system >/dev/null

# download URL DEST: fetches with retries and checks the publisher's sha256 file.
# The checksum comes from the same origin, so this catches corruption, not tampering.
download() {
  curl -fsSL --retry 5 -o "$2" "$1"
  echo "$(curl -fsSL --retry 5 "$1.sha256$3" | awk '{print $1}')  $2" | sha256sum -c -
}

download "https://kind.sigs.k8s.io/dl/${KIND_VERSION}/kind-linux-${GOARCH}" /usr/local/bin/kind sum
download "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${GOARCH}/kubectl" /usr/local/bin/kubectl ""
mkdir -p /usr/local/lib/docker/cli-plugins
download "https://github.com/docker/compose/releases/download/${COMPOSE_VERSION}/docker-compose-linux-$(uname -m)" \
  /usr/local/lib/docker/cli-plugins/docker-compose ""
chmod 0755 /usr/local/bin/kind /usr/local/bin/kubectl /usr/local/lib/docker/cli-plugins/docker-compose

# Logs Docker in to the project's ECR repository with the instance role.
cat > /usr/local/bin/healthpredict-ecr-login <<'EOF'
#!/bin/bash
set -euo pipefail
source /etc/healthpredict.env
aws ecr get-login-password --region "$AWS_REGION" |
  docker login --username AWS --password-stdin "${HEALTHPREDICT_ECR_REPOSITORY%%/*}"
EOF
chmod 0755 /usr/local/bin/healthpredict-ecr-login

if [ -z "$GIT_REPO_URL" ]; then
  echo "git_repo_url not set: tools installed, project not cloned, nothing started."
  exit 0
fi
if [ ! -d "$PROJECT_DIR/.git" ]; then
  sudo -u ec2-user git clone --branch "$GIT_REF" "$GIT_REPO_URL" "$PROJECT_DIR"
fi

# A unit rather than a one-off command: the idle alarm stops the instance, and
# the stack must come back by itself on the next start.
cat > /etc/systemd/system/healthpredict.service <<'EOF'
[Unit]
Description=Health Predict stack (Kind cluster, PostgreSQL and services)
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target
ConditionPathExists=/home/ec2-user/health-predict

[Service]
Type=oneshot
RemainAfterExit=yes
User=ec2-user
WorkingDirectory=/home/ec2-user/health-predict
EnvironmentFile=/etc/healthpredict.env
ExecStart=/bin/bash -lc '@@START_COMMAND@@'
TimeoutStartSec=1800

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
# A failing project command must not mark the whole boot as failed; its log is in journald.
systemctl enable --now healthpredict.service || echo "healthpredict.service failed: journalctl -u healthpredict"
echo "healthpredict bootstrap done: $(date -Is)"
