// Package errdefs holds the few kinds of error the runtime distinguishes and maps them onto gRPC
// status codes in one place, so CRI callers get the right code and people get the sentence.
package errdefs

import (
	"context"
	"errors"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kinds of error; wrap them with %w and name the object in the message.
var (
	ErrNotFound      = errors.New("not found")
	ErrInvalid       = errors.New("invalid argument")
	ErrAlreadyExists = errors.New("already exists")
	ErrPrecondition  = errors.New("failed precondition")
	ErrUnimplemented = errors.New("not implemented by ingot")
)

// Code returns the gRPC code for err. os.ErrNotExist and os.ErrExist count as not found and
// already exists, so errors from the filesystem and the shim map without wrapping; a kind the
// runtime chose (ErrInvalid around a missing file the request named) wins over them.
func Code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, os.ErrNotExist):
		return codes.NotFound
	case errors.Is(err, ErrAlreadyExists), errors.Is(err, os.ErrExist):
		return codes.AlreadyExists
	case errors.Is(err, ErrPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, ErrUnimplemented):
		return codes.Unimplemented
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Unknown
}

// ToGRPC turns err into a gRPC status error with the right code and err's message.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(Code(err), err.Error())
}
