"""Views: one enqueues a job, one reports on it."""

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from taquba import InvalidArgument

from . import jobs


@csrf_exempt  # a JSON API called by other programs; keep CSRF for browser forms
@require_POST
def request_report(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"error": "body must be JSON"}, status=400)
    kind = body.get("kind") if isinstance(body, dict) else None
    if not isinstance(kind, str):
        return JsonResponse({"error": "kind is required"}, status=400)
    job_id = jobs.get_queue().enqueue(jobs.queue_name(), json.dumps({"kind": kind}).encode())
    return JsonResponse({"job_id": job_id}, status=202)


@require_GET
def job_status(request: HttpRequest, job_id: str) -> JsonResponse:
    try:
        record = jobs.get_queue().get_job(job_id)
    except InvalidArgument:
        record = None
    if record is None:
        return JsonResponse({"error": "no such job"}, status=404)
    return JsonResponse({"job_id": record.id, "status": record.status.value,
                         "attempts": record.attempts, "last_error": record.last_error})
