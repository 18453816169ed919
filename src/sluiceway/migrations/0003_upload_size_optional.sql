-- Browser uploads (Uppy's S3 multipart protocol) may not say a file's size up front.
-- depends: 0002_api_tokens

ALTER TABLE dsa_jobs.uploads ALTER COLUMN size_bytes DROP NOT NULL;
ALTER TABLE dsa_jobs.uploads ALTER COLUMN s3_upload_id DROP NOT NULL;
