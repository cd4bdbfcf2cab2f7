from services.common.lifecycle import run_service

from .service import main

run_service("wf-executor", main)
