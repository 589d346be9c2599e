"""Views: one submits a job (through the process's Producer), one reports on it (through
its QueueReader). Neither opens the queue: the ``runjobs`` process owns it."""

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
    job_id = jobs.producer().enqueue(jobs.queue_name(), json.dumps({"kind": kind}).encode())
    return JsonResponse({"job_id": job_id}, status=202)


@require_GET
def job_status(request: HttpRequest, job_id: str) -> JsonResponse:
    reader = jobs.reader()
    try:
        record = None if reader is None else reader.get_job(job_id)
    except InvalidArgument:
        return JsonResponse({"error": "not a job id"}, status=400)
    if record is None:
        # Unknown, or submitted and not yet taken in by the runjobs process.
        return JsonResponse({"job_id": job_id, "status": "unknown"}, status=404)
    return JsonResponse({"job_id": record.id, "status": record.status.value,
                         "attempts": record.attempts, "last_error": record.last_error})
