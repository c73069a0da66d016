"""A local GitHub REST API for tests: ``LocalGitHub`` runs it on a loopback port in a thread."""

from .server import LocalGitHub
from .state import Comment, Token

__all__ = ["Comment", "LocalGitHub", "Token"]
