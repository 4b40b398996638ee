# facedit pack image: /packs/<PACK>/ (the model store of one pack), /packs/third_party/ (the converted
# third-party weights it references with ../third_party/, and MTCNN's) and /packs/minilm/ (the
# directions service's sentence encoder). As an init container it copies them into the volume mounted
# at /models (a Kubernetes emptyDir, a podman volume) and exits; the services read /models.
# Context: the folder `make images` prepares with docker/pack_context.py (out/images/pack-<PACK>),
# not the repository: podman build -f docker/pack.Dockerfile --build-arg PACK=digiface64 out/images/pack-digiface64
ARG BASE_IMAGE=localhost/debian-base:bookworm

# ---- verify: every file against the sha256 of its manifest (the services would refuse it anyway) ----
FROM ${BASE_IMAGE} AS verify
ARG PACK=digiface64
COPY pack_context.py /ctx/pack_context.py
COPY packs /packs
RUN python3 /ctx/pack_context.py --verify /packs \
 && test -f "/packs/${PACK}/manifest.json"

# ---- runtime: the files (root-owned, read-only) and cp ----
FROM ${BASE_IMAGE}
ARG PACK=digiface64
LABEL org.opencontainers.image.title="facedit pack ${PACK}" \
      org.opencontainers.image.description="model store of pack ${PACK} with its third-party weights and MiniLM"
# /models owned by the services' uid: an empty podman volume mounted there takes this ownership
RUN mkdir -p /models && chown 10001:10001 /models
COPY --from=verify /packs /packs
USER 10001:10001
# An init container: it copies and exits, so there is nothing to probe.
HEALTHCHECK NONE
ENTRYPOINT ["cp", "-a", "/packs/.", "/models/"]
