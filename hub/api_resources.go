package hub

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/schema"
)

// resourceJSON is a stored resource as the API shows it: the document of
// docs/resources.md with the read-only version and timestamps in metadata.
type resourceJSON struct {
	APIVersion string       `json:"apiVersion"`
	Kind       schema.Kind  `json:"kind"`
	Metadata   metadataJSON `json:"metadata"`
	Spec       schema.Spec  `json:"spec"`
}

type metadataJSON struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels"`
	Version   int64             `json:"version"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
}

func toResourceJSON(r store.Resource) resourceJSON {
	labels := r.Doc.Metadata.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return resourceJSON{
		APIVersion: schema.APIVersion, Kind: r.Doc.Kind, Spec: redactSpec(r.Doc.Spec),
		Metadata: metadataJSON{Name: r.Doc.Metadata.Name, Labels: labels, Version: r.Version, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt},
	}
}

func toResourcesJSON(rs []store.Resource) []resourceJSON {
	out := make([]resourceJSON, len(rs))
	for i, r := range rs {
		out[i] = toResourceJSON(r)
	}
	return out
}

// writeResponse is the answer to a write of one resource.
type writeResponse struct {
	Resource *resourceJSON `json:"resource,omitempty"` // absent after a delete
	Revision int64         `json:"revision"`
}

// pathKind returns the kind named by the path's plural, lower-case form
// ("virtualhosts").
func pathKind(r *http.Request) (schema.Kind, error) {
	p := r.PathValue("kind")
	plurals := make([]string, len(schema.Kinds))
	for i, k := range schema.Kinds {
		plurals[i] = kindPlural(k)
		if p == plurals[i] {
			return k, nil
		}
	}
	return "", Errorf(http.StatusNotFound, "not_found", "kind", "unknown kind %q; kinds are %s", p, strings.Join(plurals, ", "))
}

// kindPlural is the form of a kind in paths: VirtualHost is virtualhosts.
func kindPlural(k schema.Kind) string { return strings.ToLower(string(k)) + "s" }

// change is who makes a write through r, and why.
func change(r *http.Request, message string) store.Change {
	user, _ := userFrom(r.Context())
	return store.Change{Author: user, Message: message}
}

// readResource reads a body of exactly one document of kind.
func readResource(w http.ResponseWriter, r *http.Request, kind schema.Kind) (schema.Resource, int64, error) {
	docs, versions, err := readDocuments(w, r)
	if err != nil {
		return schema.Resource{}, 0, err
	}
	if len(docs) != 1 {
		return schema.Resource{}, 0, Errorf(http.StatusBadRequest, "invalid", "", "the body must hold one document, not %d; POST .../apply takes several", len(docs))
	}
	if docs[0].Kind != kind {
		return schema.Resource{}, 0, Errorf(http.StatusBadRequest, "invalid", "kind", "the document is a %s, but the path is for %s", docs[0].Kind, kindPlural(kind))
	}
	return docs[0], versions[0], nil
}

func (s *Server) handleListResources(w http.ResponseWriter, r *http.Request) error {
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	list, err := s.db.ListResources(r.Context(), r.PathValue("ws"), kind)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listJSON[resourceJSON]{Items: toResourcesJSON(list)})
}

func (s *Server) handleGetResource(w http.ResponseWriter, r *http.Request) error {
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	res, err := s.db.GetResource(r.Context(), r.PathValue("ws"), kind, r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toResourceJSON(res))
}

// handleCreateResource creates a resource that must not exist yet.
func (s *Server) handleCreateResource(w http.ResponseWriter, r *http.Request) error {
	ws := r.PathValue("ws")
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	doc, version, err := readResource(w, r, kind)
	if err != nil {
		return err
	}
	if version != 0 {
		return Errorf(http.StatusBadRequest, "invalid", "metadata.version",
			"a new resource has no version; to change an existing one, PUT it to .../%s/%s", kindPlural(kind), doc.Metadata.Name)
	}
	name := doc.Metadata.Name
	res, rev, err := s.db.PutResource(r.Context(), ws, doc, 0, change(r, fmt.Sprintf("create %s %s", kind, name)))
	if err != nil {
		return err
	}
	s.audit(r.Context(), ws, r, "resource.create", string(kind)+"/"+name, map[string]any{"revision": rev.Number})
	out := toResourceJSON(res)
	return writeJSON(w, http.StatusCreated, writeResponse{Resource: &out, Revision: rev.Number})
}

// handlePutResource replaces a resource at the version the body names, or
// creates it when the body names none.
func (s *Server) handlePutResource(w http.ResponseWriter, r *http.Request) error {
	ws, name := r.PathValue("ws"), r.PathValue("name")
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	doc, version, err := readResource(w, r, kind)
	if err != nil {
		return err
	}
	if doc.Metadata.Name != name {
		return Errorf(http.StatusBadRequest, "invalid", "metadata.name", "the document is named %q, but the path names %q", doc.Metadata.Name, name)
	}
	action := "update"
	if version == 0 {
		action = "create"
	}
	res, rev, err := s.db.PutResource(r.Context(), ws, doc, version, change(r, fmt.Sprintf("%s %s %s", action, kind, name)))
	var conflict *store.ConflictError
	if version == 0 && errors.As(err, &conflict) {
		return Errorf(http.StatusConflict, "conflict", "metadata.version",
			"%s: to replace it, give the version your change is based on in metadata.version", conflict.Error())
	}
	if err != nil {
		return err
	}
	if res.Version != version { // else the content was the same: nothing was written
		s.audit(r.Context(), ws, r, "resource."+action, string(kind)+"/"+name, map[string]any{"revision": rev.Number, "version": res.Version})
	}
	out := toResourceJSON(res)
	return writeJSON(w, http.StatusOK, writeResponse{Resource: &out, Revision: rev.Number})
}

// handleDeleteResource deletes a resource, at ?version= when given.
func (s *Server) handleDeleteResource(w http.ResponseWriter, r *http.Request) error {
	ws, name := r.PathValue("ws"), r.PathValue("name")
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	var version int64
	if v := r.URL.Query().Get("version"); v != "" {
		if version, err = strconv.ParseInt(v, 10, 64); err != nil || version < 1 {
			return Errorf(http.StatusBadRequest, "invalid", "version", "version %q must be a positive number", v)
		}
	}
	rev, err := s.db.DeleteResource(r.Context(), ws, kind, name, version, change(r, fmt.Sprintf("delete %s %s", kind, name)))
	var conflict *store.ConflictError
	if errors.As(err, &conflict) {
		return Errorf(http.StatusConflict, "conflict", "version", "%s", conflict.Error())
	}
	if err != nil {
		return err
	}
	s.audit(r.Context(), ws, r, "resource.delete", string(kind)+"/"+name, map[string]any{"revision": rev.Number})
	return writeJSON(w, http.StatusOK, writeResponse{Revision: rev.Number})
}

// applyResponse is the answer of an apply, a dry run and a rollback.
type applyResponse struct {
	Revision  int64         `json:"revision"`
	Changed   bool          `json:"changed"`
	DryRun    bool          `json:"dryRun"`
	Resources []appliedJSON `json:"resources"`
	Diff      []diffJSON    `json:"diff"`
}

type appliedJSON struct {
	Kind    schema.Kind   `json:"kind"`
	Name    string        `json:"name"`
	Op      store.ApplyOp `json:"op"`
	Version int64         `json:"version"`
}

type diffJSON struct {
	Kind schema.Kind      `json:"kind"`
	Name string           `json:"name"`
	Op   store.DiffOp     `json:"op"`
	Old  *schema.Resource `json:"old"` // null when added
	New  *schema.Resource `json:"new"` // null when removed
}

func toDiffJSON(entries []store.DiffEntry) []diffJSON {
	out := make([]diffJSON, len(entries))
	for i, e := range entries {
		out[i] = diffJSON{Kind: e.Kind, Name: e.Name, Op: e.Op, Old: redactDoc(e.Old), New: redactDoc(e.New)}
	}
	return out
}

func toApplyResponse(res store.ApplyResult, diff []store.DiffEntry, dryRun bool) applyResponse {
	out := applyResponse{Revision: res.Revision, Changed: res.Changed, DryRun: dryRun,
		Resources: make([]appliedJSON, len(res.Resources)), Diff: toDiffJSON(diff)}
	for i, a := range res.Resources {
		out.Resources[i] = appliedJSON{Kind: a.Kind, Name: a.Name, Op: a.Op, Version: a.Version}
	}
	return out
}

// maxMessage bounds a revision message.
const maxMessage = 1000

// applyParams are the query parameters of POST .../apply.
type applyParams struct {
	dryRun  bool
	message string
}

func parseApplyParams(r *http.Request) (applyParams, error) {
	q := r.URL.Query()
	p := applyParams{message: q.Get("message")}
	if v := q.Get("dryRun"); v != "" {
		var err error
		if p.dryRun, err = strconv.ParseBool(v); err != nil {
			return p, Errorf(http.StatusBadRequest, "invalid", "dryRun", "dryRun %q must be true or false", v)
		}
	}
	if len(p.message) > maxMessage {
		return p, Errorf(http.StatusBadRequest, "invalid", "message", "message is %d bytes; at most %d are allowed", len(p.message), maxMessage)
	}
	return p, nil
}

// handleApply creates or updates every document of the body as one
// revision, or with ?dryRun=true only says what that would do.
func (s *Server) handleApply(w http.ResponseWriter, r *http.Request) error {
	ws := r.PathValue("ws")
	p, err := parseApplyParams(r)
	if err != nil {
		return err
	}
	docs, _, err := readDocuments(w, r)
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		return Errorf(http.StatusBadRequest, "invalid", "", "the body holds no documents")
	}
	c := change(r, p.message)
	if p.dryRun {
		res, diff, err := s.db.PlanApply(r.Context(), ws, docs, c)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, toApplyResponse(res, diff, true))
	}
	res, err := s.db.Apply(r.Context(), ws, docs, c)
	if err != nil {
		return err
	}
	return s.writeChange(w, r, ws, res, "apply", map[string]any{"revision": res.Revision, "message": p.message, "documents": len(docs)})
}

// writeChange answers an apply or a rollback with its diff, and audits it
// when it changed something.
func (s *Server) writeChange(w http.ResponseWriter, r *http.Request, ws string, res store.ApplyResult, action string, detail map[string]any) error {
	var diff []store.DiffEntry
	if res.Changed {
		s.audit(r.Context(), ws, r, action, fmt.Sprintf("revision %d", res.Revision), detail)
		var err error
		if diff, err = s.db.Diff(r.Context(), ws, res.Revision-1, res.Revision); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, toApplyResponse(res, diff, false))
}
