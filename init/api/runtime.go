package api

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/init/api/apiv1"
)

// cri is the node's CRI runtime, reached on its socket the first time a call needs it.
type cri struct {
	once sync.Once
	conn *grpc.ClientConn
	err  error
}

func (h *handler) runtime() (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient, error) {
	c := &h.s.cri
	c.once.Do(func() {
		c.conn, c.err = grpc.NewClient("unix://"+h.node().RuntimeSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	})
	if c.err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "CRI runtime at %s: %v", h.node().RuntimeSocket, c.err)
	}
	if _, err := os.Stat(h.node().RuntimeSocket); err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "this node runs no CRI runtime (%s: %v)", h.node().RuntimeSocket, err)
	}
	return runtimeapi.NewRuntimeServiceClient(c.conn), runtimeapi.NewImageServiceClient(c.conn), nil
}

func toImage(i *runtimeapi.Image) apiv1.Image {
	return apiv1.Image{ID: i.Id, Tags: i.RepoTags, Digests: i.RepoDigests, Size: i.Size, Pinned: i.Pinned}
}

func (h *handler) Images(ctx context.Context, _ *apiv1.Empty) (*apiv1.ImagesReply, error) {
	_, is, err := h.runtime()
	if err != nil {
		return nil, err
	}
	r, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return nil, err
	}
	rep := &apiv1.ImagesReply{Images: []apiv1.Image{}}
	for _, i := range r.Images {
		rep.Images = append(rep.Images, toImage(i))
	}
	slices.SortFunc(rep.Images, func(a, b apiv1.Image) int { return strings.Compare(first(a.Tags, a.ID), first(b.Tags, b.ID)) })
	return rep, nil
}

func first(s []string, or string) string {
	if len(s) > 0 {
		return s[0]
	}
	return or
}

// resolveImage finds the image ref names: a reference the runtime resolves itself, else an
// image ID or a unique prefix of one (with or without "sha256:"), as ctr and crictl accept.
func (h *handler) resolveImage(ctx context.Context, ref string, verbose bool) (*runtimeapi.ImageStatusResponse, error) {
	if ref == "" {
		return nil, status.Error(codes.InvalidArgument, "no image named")
	}
	_, is, err := h.runtime()
	if err != nil {
		return nil, err
	}
	st, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: verbose})
	if err == nil && st.Image != nil {
		return st, nil
	}
	list, lerr := is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if lerr != nil {
		return nil, lerr
	}
	var match []string
	for _, i := range list.Images {
		if strings.HasPrefix(strings.TrimPrefix(i.Id, "sha256:"), strings.TrimPrefix(ref, "sha256:")) {
			match = append(match, i.Id)
		}
	}
	switch len(match) {
	case 0:
		if err != nil {
			return nil, err
		}
		return nil, status.Errorf(codes.NotFound, "image %q: not on this node", ref)
	case 1:
		return is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: match[0]}, Verbose: verbose})
	default:
		return nil, status.Errorf(codes.InvalidArgument, "image %q: the prefix of %d image IDs; give more of it", ref, len(match))
	}
}

func (h *handler) ImageInspect(ctx context.Context, req *apiv1.ImageRef) (*apiv1.ImageInspectReply, error) {
	st, err := h.resolveImage(ctx, req.Ref, true)
	if err != nil {
		return nil, err
	}
	return &apiv1.ImageInspectReply{Image: toImage(st.Image), Info: st.Info}, nil
}

func (h *handler) Pull(ctx context.Context, req *apiv1.ImageRef) (*apiv1.PullReply, error) {
	if req.Ref == "" {
		return nil, status.Error(codes.InvalidArgument, "no image named")
	}
	_, is, err := h.runtime()
	if err != nil {
		return nil, err
	}
	r, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: req.Ref}})
	if err != nil {
		return nil, err
	}
	return &apiv1.PullReply{ID: r.ImageRef}, nil
}

func (h *handler) ImageRemove(ctx context.Context, req *apiv1.ImageRef) (*apiv1.Empty, error) {
	st, err := h.resolveImage(ctx, req.Ref, false)
	if err != nil {
		return nil, err
	}
	_, is, err := h.runtime()
	if err != nil {
		return nil, err
	}
	if _, err := is.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: st.Image.Id}}); err != nil {
		return nil, err
	}
	return &apiv1.Empty{}, nil
}

var containerStates = map[runtimeapi.ContainerState]string{
	runtimeapi.ContainerState_CONTAINER_CREATED: "created",
	runtimeapi.ContainerState_CONTAINER_RUNNING: "running",
	runtimeapi.ContainerState_CONTAINER_EXITED:  "exited",
	runtimeapi.ContainerState_CONTAINER_UNKNOWN: "unknown",
}

func (h *handler) Containers(ctx context.Context, _ *apiv1.Empty) (*apiv1.ContainersReply, error) {
	rs, _, err := h.runtime()
	if err != nil {
		return nil, err
	}
	pods, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, err
	}
	podOf := map[string]*runtimeapi.PodSandboxMetadata{}
	for _, p := range pods.Items {
		podOf[p.Id] = p.Metadata
	}
	cs, err := rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return nil, err
	}
	rep := &apiv1.ContainersReply{Containers: []apiv1.Container{}}
	for _, c := range cs.Containers {
		out := apiv1.Container{ID: c.Id, PodID: c.PodSandboxId, State: containerStates[c.State], Created: time.Unix(0, c.CreatedAt).UTC()}
		if c.Metadata != nil {
			out.Name = c.Metadata.Name
		}
		if c.Image != nil {
			out.Image = c.Image.UserSpecifiedImage
			if out.Image == "" {
				out.Image = c.Image.Image
			}
		}
		if out.Image == "" {
			out.Image = c.ImageRef
		}
		if m := podOf[c.PodSandboxId]; m != nil {
			out.Pod, out.Namespace = m.Name, m.Namespace
		}
		if c.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			if st, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id}); err == nil && st.Status != nil {
				out.ExitCode = st.Status.ExitCode
			}
		}
		rep.Containers = append(rep.Containers, out)
	}
	slices.SortFunc(rep.Containers, func(a, b apiv1.Container) int { return a.Created.Compare(b.Created) })
	return rep, nil
}

// resolveContainer finds the container an ID or a unique prefix of one names.
func (h *handler) resolveContainer(ctx context.Context, rs runtimeapi.RuntimeServiceClient, id string) (string, error) {
	if id == "" {
		return "", status.Error(codes.InvalidArgument, "no container named")
	}
	cs, err := rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return "", err
	}
	var match []string
	for _, c := range cs.Containers {
		if strings.HasPrefix(c.Id, id) {
			match = append(match, c.Id)
		}
	}
	switch len(match) {
	case 0:
		return "", status.Errorf(codes.NotFound, "container %q: not on this node", id)
	case 1:
		return match[0], nil
	default:
		return "", status.Errorf(codes.InvalidArgument, "container %q: the prefix of %d container IDs; give more of it", id, len(match))
	}
}

// ContainerLogs sends a container's CRI log file; following, until the container has exited and
// its last line was sent.
func (h *handler) ContainerLogs(req *apiv1.LogsRequest, out apiv1.ChunkSender) error {
	ctx := out.Context()
	rs, _, err := h.runtime()
	if err != nil {
		return err
	}
	id, err := h.resolveContainer(ctx, rs, req.Name)
	if err != nil {
		return err
	}
	st, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return err
	}
	path := st.Status.GetLogPath()
	if path == "" {
		return status.Errorf(codes.FailedPrecondition, "container %s keeps no log (its pod has no log directory)", id)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return status.Errorf(codes.NotFound, "container %s: log %s: %v", id, path, err)
	}
	if err := send(out, lastLines(data, req.Tail)); err != nil || !req.Follow {
		return err
	}
	exited := func() bool {
		st, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		return err != nil || st.Status.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING && st.Status.GetState() != runtimeapi.ContainerState_CONTAINER_CREATED
	}
	return follow(ctx, path, int64(len(data)), exited, out)
}
