package hub

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
)

type revisionJSON struct {
	Number    int64     `json:"number"`
	Author    string    `json:"author"`
	Message   string    `json:"message"`
	CreatedAt time.Time `json:"createdAt"`
}

// revisionDetailJSON is one revision with its resources as they were.
type revisionDetailJSON struct {
	revisionJSON
	Resources []resourceJSON `json:"resources"`
}

func toRevisionJSON(r store.Revision) revisionJSON {
	return revisionJSON{Number: r.Number, Author: r.Author, Message: r.Message, CreatedAt: r.CreatedAt}
}

// Paging of GET .../revisions.
const (
	defaultRevisionPage = 50
	maxRevisionPage     = 500
)

// intParam parses an integer request value (a path or query parameter)
// of at least min; field names it in the error.
func intParam(field, v string, min int64) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min {
		return 0, Errorf(http.StatusBadRequest, "invalid", field, "%s %q must be a whole number of at least %d", field, v, min)
	}
	return n, nil
}

// pathRevision is the {rev} of the path: a revision number, from 1.
func pathRevision(r *http.Request) (int64, error) { return intParam("rev", r.PathValue("rev"), 1) }

// handleListRevisions lists revisions newest first, a page at a time:
// next is the before= of the following page, absent on the last.
func (s *Server) handleListRevisions(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var before, limit int64 = 0, defaultRevisionPage
	var err error
	if v := q.Get("before"); v != "" {
		if before, err = intParam("before", v, 1); err != nil {
			return err
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = intParam("limit", v, 1); err != nil {
			return err
		}
		if limit > maxRevisionPage {
			return Errorf(http.StatusBadRequest, "invalid", "limit", "limit %d is over the maximum of %d", limit, maxRevisionPage)
		}
	}
	// One more than asked says whether there is a next page.
	revs, err := s.db.ListRevisions(r.Context(), r.PathValue("ws"), before, int(limit)+1)
	if err != nil {
		return err
	}
	out := struct {
		Items []revisionJSON `json:"items"`
		Next  int64          `json:"next,omitempty"`
	}{Items: make([]revisionJSON, 0, len(revs))}
	if len(revs) > int(limit) {
		revs = revs[:limit]
		out.Next = revs[limit-1].Number
	}
	for _, rev := range revs {
		out.Items = append(out.Items, toRevisionJSON(rev))
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleGetRevision shows a revision with the resources as they were then.
func (s *Server) handleGetRevision(w http.ResponseWriter, r *http.Request) error {
	ws := r.PathValue("ws")
	n, err := pathRevision(r)
	if err != nil {
		return err
	}
	rev, err := s.db.GetRevision(r.Context(), ws, n)
	if err != nil {
		return err
	}
	rs, err := s.db.RevisionResources(r.Context(), ws, n)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, revisionDetailJSON{toRevisionJSON(rev), toResourcesJSON(rs)})
}

// handleRevisionDiff compares revision {rev} with ?from= (default the one
// before it).
func (s *Server) handleRevisionDiff(w http.ResponseWriter, r *http.Request) error {
	to, err := pathRevision(r)
	if err != nil {
		return err
	}
	from := to - 1
	if v := r.URL.Query().Get("from"); v != "" {
		if from, err = intParam("from", v, 0); err != nil {
			return err
		}
	}
	entries, err := s.db.Diff(r.Context(), r.PathValue("ws"), from, to)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		From    int64      `json:"from"`
		To      int64      `json:"to"`
		Entries []diffJSON `json:"entries"`
	}{from, to, toDiffJSON(entries)})
}

// handleRollback makes the workspace equal revision {rev} again, as a new
// revision, and answers as an apply does.
func (s *Server) handleRollback(w http.ResponseWriter, r *http.Request) error {
	ws := r.PathValue("ws")
	n, err := pathRevision(r)
	if err != nil {
		return err
	}
	res, err := s.db.Rollback(r.Context(), ws, n, change(r, fmt.Sprintf("rollback to revision %d", n)))
	if err != nil {
		return err
	}
	return s.writeChange(w, r, ws, res, "rollback", map[string]any{"revision": res.Revision, "to": n})
}
