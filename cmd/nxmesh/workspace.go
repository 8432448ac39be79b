package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// workspaceFlags are the hub flags plus the workspace a command acts on.
type workspaceFlags struct {
	hubFlags `embed:""`

	Workspace string `help:"Workspace to act on." env:"NXMESH_WORKSPACE" default:"default"`
}

// path is the API path of the workspace.
func (f *workspaceFlags) path() string {
	return "/api/v1/workspaces/" + url.PathEscape(f.Workspace)
}

// loginHint adds what to do to the hub's refusal of a missing or expired
// token: session tokens from nxmesh login last 12 hours.
func loginHint(err error) error {
	var re *remoteError
	if errors.As(err, &re) && re.Status == http.StatusUnauthorized {
		return fmt.Errorf("%w (run nxmesh login again, or pass --token / set NXMESH_TOKEN)", err)
	}
	return err
}
