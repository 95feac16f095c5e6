package daemon

import (
	"context"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"ingot.dev/ingot/runtime/config"
	"ingot.dev/ingot/runtime/cri"
	"ingot.dev/ingot/runtime/images"
	"ingot.dev/ingot/runtime/metrics"
)

// newLogger is the daemon's logger as config.toml's [debug] table asks: its level, and text or
// JSON lines.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == config.LogFormatJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logRequests logs every CRI request at debug level, so that `[debug] level = "debug"` shows
// what the kubelet asks and how each request ended.
func logRequests(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !log.Enabled(ctx, slog.LevelDebug) {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		log.Debug("CRI request", "method", info.FullMethod, "code", status.Code(err).String(),
			"duration", time.Since(start).Round(time.Microsecond))
		return resp, err
	}
}

// pullObserver hands each image pull's report to the metrics.
func pullObserver(m *metrics.Metrics) func(images.PullReport) {
	return func(r images.PullReport) { m.ImagePulled(r.Bytes, r.Duration, r.Err) }
}

// census reads the CRI server's pods, containers and shims at each scrape.
func census(srv *cri.Server) func() metrics.State {
	return func() metrics.State {
		c := srv.Census()
		return metrics.State{PodsReady: c.PodsReady, PodsNotReady: c.PodsNotReady, Containers: c.Containers, Shims: c.Shims}
	}
}
