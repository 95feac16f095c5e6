package cri

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/oci"
)

// Image is what the CRI layer needs to know about a stored image.
type Image struct {
	ID          string // the config digest, "sha256:…"
	RepoTags    []string
	RepoDigests []string
	Size        uint64
	Config      oci.ImageConfig
}

// ImageStore is the image side of the runtime (runtime/images behind an adapter).
type ImageStore interface {
	Pull(ctx context.Context, ref string, auth *runtimeapi.AuthConfig) (Image, error)
	Get(refOrID string) (Image, error)
	List() ([]Image, error)
	Remove(refOrID string) error
	Layers(id string) ([]string, error) // unpacked layer directories, lowest first
	FsInfo() (mountpoint string, usedBytes, inodes uint64, err error)
}

func toCRIImage(img Image) *runtimeapi.Image {
	out := &runtimeapi.Image{Id: img.ID, RepoTags: img.RepoTags, RepoDigests: img.RepoDigests, Size: img.Size,
		Spec: &runtimeapi.ImageSpec{Image: img.ID}}
	// The kubelet's runAsNonRoot check reads these: a uid it checks against 0 and then passes back
	// as run_as_user; a username it refuses to verify. Only a real id is a uid — "-1" or
	// "4294967295" would pass the check and must be reported as a name instead.
	user, _, _ := strings.Cut(img.Config.User, ":")
	if user != "" {
		if uid, isID, err := oci.ParseID(user); isID && err == nil {
			out.Uid = &runtimeapi.Int64Value{Value: int64(uid)}
		} else {
			out.Username = user
		}
	}
	return out
}

// ListImages lists stored images, filtered by an image reference.
func (s *Server) ListImages(ctx context.Context, r *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	if ref := r.GetFilter().GetImage().GetImage(); ref != "" {
		img, err := s.opts.Images.Get(ref)
		if errors.Is(err, errdefs.ErrNotFound) {
			return &runtimeapi.ListImagesResponse{}, nil
		}
		if err != nil {
			return nil, s.grpcErr("ListImages", err)
		}
		return &runtimeapi.ListImagesResponse{Images: []*runtimeapi.Image{toCRIImage(img)}}, nil
	}
	imgs, err := s.opts.Images.List()
	if err != nil {
		return nil, s.grpcErr("ListImages", err)
	}
	out := make([]*runtimeapi.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toCRIImage(img))
	}
	return &runtimeapi.ListImagesResponse{Images: out}, nil
}

// ImageStatus reports an image; an image that is not present is a response with no image, not
// an error (CRI proto).
func (s *Server) ImageStatus(ctx context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	img, err := s.opts.Images.Get(r.GetImage().GetImage())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, s.grpcErr("ImageStatus", err)
	}
	resp := &runtimeapi.ImageStatusResponse{Image: toCRIImage(img)}
	if r.GetVerbose() {
		resp.Info = map[string]string{"info": `{"id":"` + img.ID + `"}`}
	}
	return resp, nil
}

// PullImage pulls an image through the configured mirrors and returns its id.
func (s *Server) PullImage(ctx context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := r.GetImage().GetImage()
	start := time.Now()
	img, err := s.opts.Images.Pull(ctx, ref, r.GetAuth())
	if err != nil {
		return nil, s.grpcErr("PullImage", err, "image", ref)
	}
	s.log.Info("image pulled", "image", ref, "id", img.ID, "took", time.Since(start).Round(time.Millisecond))
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}

// RemoveImage removes an image; removing one that is not there is not an error (CRI proto).
func (s *Server) RemoveImage(ctx context.Context, r *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	// Layers are shared read-only lower directories of running containers' rootfs: removing an
	// image a container still uses would pull the ground from under it.
	if img, err := s.opts.Images.Get(r.GetImage().GetImage()); err == nil {
		s.mu.Lock()
		var user string
		for _, c := range s.containers {
			if c.ImageID == img.ID {
				user = c.ID
				break
			}
		}
		s.mu.Unlock()
		if user != "" {
			return nil, s.grpcErr("RemoveImage", fmt.Errorf("image %s is used by container %s: %w", img.ID, user, errdefs.ErrPrecondition))
		}
	}
	err := s.opts.Images.Remove(r.GetImage().GetImage())
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, s.grpcErr("RemoveImage", err, "image", r.GetImage().GetImage())
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the filesystem holding image layers.
func (s *Server) ImageFsInfo(ctx context.Context, r *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	mp, used, inodes, err := s.opts.Images.FsInfo()
	if err != nil {
		return nil, s.grpcErr("ImageFsInfo", err)
	}
	u := &runtimeapi.FilesystemUsage{
		Timestamp: time.Now().UnixNano(), FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: mp},
		UsedBytes: &runtimeapi.UInt64Value{Value: used}, InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{u}}, nil
}
