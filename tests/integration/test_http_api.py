"""HTTP endpoints of protocol v1 against the real server: create (query and JSON body),
validation errors, info, list, delete, /status, static web page, capacity (503)."""
import os

from harness import Server, check, finish

srv = Server("--max-sessions", "3", "--max-images", "50")
try:
    # create with query parameters, like the reference clients
    st, js = srv.http("POST", "/ws/session/create?max_images=7&process_res=140&show_cameras=false"
                              "&process_res_method=lower_bound_crop&conf_thresh_percentile=20.5&num_max_points=1234")
    check(st == 200, f"create via query: {st} {js}")
    check(js.get("success") is True and len(js.get("session_id", "")) == 36, f"create shape {js}")
    check(js.get("max_images") == 7, "max_images echoed")
    cfg = js.get("config", {})
    check(cfg == {"process_res": 140, "process_res_method": "lower_bound_crop", "conf_thresh_percentile": 20.5,
                  "num_max_points": 1234, "show_cameras": False, "auto_generate_after": 0}, f"config echoed exactly: {cfg}")
    check(isinstance(js.get("created_at"), float), "created_at is epoch seconds")
    sid = js["session_id"]

    # create with a JSON body
    st, js2 = srv.http("POST", "/ws/session/create", {"max_images": 3, "process_res": 280},
                       {"Content-Type": "application/json"})
    check(st == 200 and js2["max_images"] == 3 and js2["config"]["process_res"] == 280, f"create via body {js2}")
    check(js2["config"]["num_max_points"] == 10000000 and js2["config"]["show_cameras"] is True,
          "reference defaults for unspecified fields")

    # validation errors: 422 with a detail that names the field
    for q, field in [("process_res=abc", "process_res"), ("process_res=5", "process_res"),
                     ("max_images=0", "max_images"), ("max_images=51", "max_images"),
                     ("process_res_method=nearest", "process_res_method"),
                     ("conf_thresh_percentile=120", "conf_thresh_percentile"),
                     ("show_cameras=maybe", "show_cameras"), ("num_max_points=-1", "num_max_points")]:
        st, js = srv.http("POST", "/ws/session/create?" + q)
        check(st == 422 and field in js.get("detail", ""), f"422 for {q}: {st} {js}")
    st, js = srv.http("POST", "/ws/session/create", b"[1,2]")
    check(st == 422 and "JSON object" in js.get("detail", ""), f"422 for a non-object body: {st} {js}")
    st, js = srv.http("POST", "/ws/session/create", {"process_res": "big"})
    check(st == 422, f"422 for a bad JSON value: {st}")

    # info
    st, info = srv.http("GET", f"/ws/session/{sid}")
    check(st == 200, "info 200")
    check(set(info) == {"session_id", "created_at", "last_activity", "status", "image_count", "max_images",
                        "error_message"}, f"info keys {sorted(info)}")
    check(info["status"] == "active" and info["image_count"] == 0 and info["max_images"] == 7
          and info["error_message"] is None, f"info values {info}")
    for bad in ["00000000-0000-4000-8000-000000000000", "nope"]:
        st, js = srv.http("GET", f"/ws/session/{bad}")
        check(st == 404 and js == {"detail": "Session not found"}, f"404 for {bad}: {st} {js}")
    # a traversal attempt never reaches a file (CivetWeb normalises the path first)
    st, _ = srv.http("GET", "/ws/session/..%2F..%2F..%2Fetc%2Fpasswd")
    check(st == 404, f"404 for a traversal attempt: {st}")

    # list
    st, lst = srv.http("GET", "/ws/sessions")
    check(st == 200, "list 200")
    stats = lst.get("stats", {})
    check(stats.get("total_sessions") == 2 and stats.get("max_sessions") == 3 and stats.get("active_sessions") == 2
          and stats.get("processing_sessions") == 0 and stats.get("total_images") == 0
          and stats.get("session_timeout") == 3600.0, f"stats {stats}")
    ids = {s["session_id"] for s in lst.get("sessions", [])}
    check(ids == {sid, js2["session_id"]}, "list names both sessions")
    check(all(set(s) == {"session_id", "created_at", "last_activity", "status", "image_count"} for s in lst["sessions"]),
          "list entry keys")

    # capacity: the 4th session is refused with 503, nobody is evicted
    sid3 = srv.create()
    st, js = srv.http("POST", "/ws/session/create")
    check(st == 503 and "Maximum number of sessions (3)" in js.get("detail", ""), f"503 at capacity: {st} {js}")
    for s in (sid, js2["session_id"], sid3):
        check(srv.http("GET", f"/ws/session/{s}")[0] == 200, "no live session evicted")

    # delete
    st, js = srv.http("DELETE", f"/ws/session/{sid3}")
    check(st == 200 and js == {"success": True, "message": f"Session {sid3} deleted"}, f"delete {st} {js}")
    check(srv.http("GET", f"/ws/session/{sid3}")[0] == 404, "deleted session is gone")
    check(not os.path.exists(os.path.join(srv.data_dir, "sessions", sid3)), "deleted session's files are gone")
    st, js = srv.http("DELETE", f"/ws/session/{sid3}")
    check(st == 404 and js == {"detail": "Session not found"}, "second delete is 404")
    check(srv.http("POST", "/ws/session/create")[0] == 200, "capacity is free again after delete")

    # health
    st, status = srv.http("GET", "/status")
    check(st == 200 and status["status"] == "ok", f"status {status}")
    check(status["model"]["trained"] is False and "UNTRAINED" in status["model"].get("warning", ""),
          "demo model is labelled untrained")
    check(status["workers"]["configured"] == 1 and status["workers"]["alive"] == 1 and status["workers"]["ready"] == 1,
          f"workers {status['workers']}")
    # Each worker names its BLAS kernels and who chose them (worker/blas_kernels.h).
    check(all(any(f" ({why}" in w.get("blas", "") for why in ("OpenBLAS", "OPENBLAS_CORETYPE=", "corrected from "))
              for w in status["workers"]["list"]), f"blas {status['workers']}")
    check(status["queue"]["queued"] == 0 and status["queue"]["running"] == 0, "queue empty")
    check(status["sessions"]["total"] == 3, "status session count")

    # the web page is served at /
    st, page = srv.http("GET", "/")
    check(st == 200 and b"<html" in page.lower() if isinstance(page, bytes) else False, "web page at /")

    # CORS preflight
    st, _ = srv.http("OPTIONS", "/ws/session/create")
    check(st == 204, "CORS preflight answered")
finally:
    srv.cleanup()
finish("test_http_api")
