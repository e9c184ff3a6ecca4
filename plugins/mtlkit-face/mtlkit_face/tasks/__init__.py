"""The face tasks: ``face_identity`` (identification + verification embedding) and ``expression``.

The registry imports ``mtlkit_face.tasks.identity`` / ``.expression`` by name on first use, so this
package imports nothing itself.
"""
