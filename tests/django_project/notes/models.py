from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)
    #: The worker's pid and the id of the database connection that wrote the row.
    pid = models.IntegerField(default=0)
