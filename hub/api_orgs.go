package hub

import (
	"errors"
	"net/http"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/pki"
)

type organizationJSON struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

type workspaceJSON struct {
	Name         string    `json:"name"`
	Organization string    `json:"organization"`
	Revision     int64     `json:"revision"`
	CreatedAt    time.Time `json:"createdAt"`
}

func toWorkspaceJSON(w store.Workspace) workspaceJSON {
	return workspaceJSON{Name: w.Name, Organization: w.Organization, Revision: w.Revision, CreatedAt: w.CreatedAt}
}

// listJSON is the shape of every list answer.
type listJSON[T any] struct {
	Items []T `json:"items"`
}

// validName checks an organization or workspace name. Workspace names end
// up in agent identities (spiffe://.../ws/NAME/agent/ID) and in URL paths,
// so both follow the identity segment grammar.
func validName(what, name string) error {
	if pki.ValidateSegment(what, name) != nil {
		return Errorf(http.StatusBadRequest, "invalid", "name",
			"%q is not a valid %s name: use 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit", name, what)
	}
	return nil
}

type organizationRequest struct {
	Name string `json:"name"`
}

// Validate checks the request.
func (req organizationRequest) Validate() error { return validName("organization", req.Name) }

type workspaceRequest struct {
	Name         string `json:"name"`
	Organization string `json:"organization,omitempty"` // default "default"
}

// Validate checks the request and fills in the default organization.
func (req *workspaceRequest) Validate() error {
	if req.Organization == "" {
		req.Organization = store.DefaultName
	}
	return validName("workspace", req.Name)
}

func (s *Server) handleListOrganizations(w http.ResponseWriter, r *http.Request) error {
	orgs, err := s.db.ListOrganizations(r.Context())
	if err != nil {
		return err
	}
	out := listJSON[organizationJSON]{Items: make([]organizationJSON, 0, len(orgs))}
	for _, o := range orgs {
		out.Items = append(out.Items, organizationJSON{Name: o.Name, CreatedAt: o.CreatedAt})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCreateOrganization(w http.ResponseWriter, r *http.Request) error {
	var req organizationRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	o, err := s.db.CreateOrganization(r.Context(), req.Name)
	if errors.Is(err, store.ErrConflict) {
		return Errorf(http.StatusConflict, "conflict", "name", "organization %q already exists", req.Name)
	}
	if err != nil {
		return err
	}
	s.audit(r.Context(), "", r, "organization.create", o.Name, nil)
	return writeJSON(w, http.StatusCreated, organizationJSON{Name: o.Name, CreatedAt: o.CreatedAt})
}

func (s *Server) handleListWorkspaces(w http.ResponseWriter, r *http.Request) error {
	org := r.URL.Query().Get("organization")
	if org != "" {
		// An unknown organization is an error, not an empty list, so a
		// typo does not look like an empty organization.
		if _, err := s.db.GetOrganization(r.Context(), org); err != nil {
			return err
		}
	}
	list, err := s.db.ListWorkspaces(r.Context(), org)
	if err != nil {
		return err
	}
	out := listJSON[workspaceJSON]{Items: make([]workspaceJSON, 0, len(list))}
	for _, ws := range list {
		out.Items = append(out.Items, toWorkspaceJSON(ws))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCreateWorkspace(w http.ResponseWriter, r *http.Request) error {
	var req workspaceRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	ws, err := s.db.CreateWorkspace(r.Context(), req.Organization, req.Name)
	switch {
	case errors.Is(err, store.ErrConflict):
		return Errorf(http.StatusConflict, "conflict", "name", "workspace %q already exists", req.Name)
	case errors.Is(err, store.ErrNotFound):
		return Errorf(http.StatusNotFound, "not_found", "organization", "organization %q does not exist", req.Organization)
	case err != nil:
		return err
	}
	s.audit(r.Context(), ws.Name, r, "workspace.create", ws.Name, map[string]any{"organization": ws.Organization})
	return writeJSON(w, http.StatusCreated, toWorkspaceJSON(ws))
}

func (s *Server) handleGetWorkspace(w http.ResponseWriter, r *http.Request) error {
	ws, err := s.db.GetWorkspace(r.Context(), r.PathValue("ws"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toWorkspaceJSON(ws))
}
