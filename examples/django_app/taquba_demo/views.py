"""Views: one submits a task (``delay`` goes through this process's ``Producer``), one
reports on it (through a ``QueueReader``). Neither opens the queue: the
``taquba_worker`` process owns it."""

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from taquba import InvalidArgument, JobStatus
from taquba.contrib.django import tasks as project_tasks

from . import jobs
from .tasks import build_report


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
    result = build_report.delay(kind)
    return JsonResponse({"job_id": result.id}, status=202)


@require_GET
def job_status(request: HttpRequest, job_id: str) -> JsonResponse:
    reader = jobs.reader()
    try:
        record = None if reader is None else reader.get_job(job_id)
    except InvalidArgument:
        return JsonResponse({"error": "not a job id"}, status=400)
    if record is None:
        # Unknown, or submitted and not yet taken in by the taquba_worker process.
        return JsonResponse({"job_id": job_id, "status": "unknown"}, status=404)
    answer = {
        "job_id": record.id,
        "status": record.status.value,
        "attempts": record.attempts,
        "last_error": record.last_error,
    }
    if record.status is JobStatus.DONE:
        answer["result"] = project_tasks.result(job_id).get(timeout=1.0)
    return JsonResponse(answer)
